"""The local service stack: real Mosquitto, Tansu and PostgreSQL on free loopback ports."""
