"""The stream agents and the pure logic they call (scorer, dedupe), testable without a broker."""
