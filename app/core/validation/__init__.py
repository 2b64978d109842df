"""Input checks at the HTTP edge for hostile values, and defensive output for stored rows."""
