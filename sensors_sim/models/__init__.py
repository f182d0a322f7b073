"""Physical models: one module per phenomenon, each a pure function of time arrays and a seeded RNG."""
