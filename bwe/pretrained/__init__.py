"""The default exported model used by `bwe-enhance` when no --model is given."""
