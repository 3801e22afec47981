"""The pattern in a browser: an HTTP API, Server-Sent Events that resume, and a chat page."""
