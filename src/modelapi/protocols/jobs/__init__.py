"""Prediction jobs over HTTP (the job service itself is ``modelapi.jobs``)."""
