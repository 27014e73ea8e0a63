"""Campaign triggers: the checked triggers file and the decision per segment change."""
