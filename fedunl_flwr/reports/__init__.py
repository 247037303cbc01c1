"""Tables and figures built from the run store."""
