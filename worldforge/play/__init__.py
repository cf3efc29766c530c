"""`worldforge play`: steer a world model from the browser (see `session` and `server`)."""
