"""online_als."""
