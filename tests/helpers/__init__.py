"""What several test modules (and scripts/soak.py) share: the fake tone models, a real mosquitto broker,
the daemon process over its CLI, synthetic audio and a fake microphone, a systemd notify socket."""
