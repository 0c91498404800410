"""What a person reads: summary, terminal table, comparison, HTML, README figures."""
