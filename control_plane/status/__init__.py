"""Health probes and the admin status page."""
