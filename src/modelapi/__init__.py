"""modelapi: one command turns a trained model into a robust, documented JSON web API."""
