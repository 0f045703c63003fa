"""Pure validation: names and bytes in, findings out. No file-system access, no gateway imports."""
