"""Authentication, authorisation and limits."""
