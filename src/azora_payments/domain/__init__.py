"""Business rules: no HTTP, no SQL strings, no Stripe SDK."""
