"""The run protocol: a run's states and records, the headers it travels with, its queues'
visibility rule, its table and the statements that write it, how its end is announced
(NOTIFY framing and parsing) and waited for."""
