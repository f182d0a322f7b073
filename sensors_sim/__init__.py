"""The Khánh Hòa sensor world: registry, physical models, labelled scenarios, publish, record, replay."""
