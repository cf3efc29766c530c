"""The base of every error a person can fix from its message alone."""


class WorldforgeError(Exception):
    """Bad input (config, package, dataset, shard, action space): the message names the file and
    the field at fault and says what was expected. The CLI prints it without a traceback."""
