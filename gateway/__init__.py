"""The fdep-gateway daemon: lifecycle, watching, pipeline, history, forwarders and the command line."""
