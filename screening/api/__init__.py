"""HTTP/WebSocket edge: routes, wire schemas, authentication and the problem+json error mapping."""
