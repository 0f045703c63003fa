"""What the daemon tells Prometheus: the sink the steps call, the exporter at the edge."""
