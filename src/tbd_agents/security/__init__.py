"""Security primitives: API keys, token encryption with versioned keys, GitHub identity."""
