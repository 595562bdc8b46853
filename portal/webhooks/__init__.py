"""Provider webhooks: verified, idempotent event routes that move connections through portal.lifecycle."""
