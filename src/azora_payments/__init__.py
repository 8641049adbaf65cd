"""Azora Payments: take money through Stripe, with receipts, refunds and webhooks."""
