"""Development stack: the localstripe-based Stripe emulator (dev/test only, GPL tool)."""
