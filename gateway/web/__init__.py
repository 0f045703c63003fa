"""The web console (``fdep-gateway web``): institutions' files and receipts; operators' stations, replay."""
