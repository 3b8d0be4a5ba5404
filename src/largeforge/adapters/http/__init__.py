"""Remote experts over the OpenAI HTTP API."""
