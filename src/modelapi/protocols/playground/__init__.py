"""The playground: a page per model to try it with a form or a CSV file (docs/playground.md)."""
