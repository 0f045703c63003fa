"""Table interface specs and the transfer-code registry model: declarative data, loaded and checked."""
