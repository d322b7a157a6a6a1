"""The broker account of the credential and TLS tests (test_mqtt_security, test_security)."""

USER, PASSWORD = "monitor", "Corr3ct-horse-battery"
WRONG_PASSWORD = "Wr0ng-staple-donkey"
PASSWORD_ENV = "NURSERY_TEST_MQTT_PASSWORD"
