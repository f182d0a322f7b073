"""Kafka side of the pipeline: the MQTT→Kafka bridge and the Faust app with its agents."""
