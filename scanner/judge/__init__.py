"""Judge: the rule catalog, the policy, the pure checks and the finding lifecycle."""
