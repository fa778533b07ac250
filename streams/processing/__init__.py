"""The exactly-once processing runtime: transactions, state stores, agents."""
