"""Rule engine and SRP policy: decides what every door should be, from every active source."""
