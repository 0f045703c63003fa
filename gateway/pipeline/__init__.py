"""One claimed file's way: route -> validate -> decide -> hold -> forward -> record (flow)."""
