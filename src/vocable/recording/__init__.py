"""Recording sessions, and replaying a recording through the pipeline (docs/recording.md).

- ``recorder``: ``storage: {record: audio | events}`` keeps one file per session (``format``): what the client
  sent, every event with its time, and what each provider produced;
- ``recorded``: providers that answer from a recording (``vocable replay --providers recorded``);
- ``clock``: a virtual clock, on which a replay runs as fast as the machine allows;
- ``replay``: ``vocable replay``: run a recording again and say, turn by turn, what differs.
"""
