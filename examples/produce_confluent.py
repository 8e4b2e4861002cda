"""Submit one file to the Evidence Locker with confluent-kafka (librdkafka), not aiokafka.

    KAFKA_SASL_USERNAME=stella-producer \
    KAFKA_SASL_PASSWORD_FILE=~/.local/share/stella/secrets/kafka/producer.password \
    python examples/produce_confluent.py BOOTSTRAP TOPIC FILE [KIND] [SUBJECT]

Prints the artifact id. Any Kafka client in any language can do the same: the record key is the
content digest and the value is the JSON submission described in the README. It logs in as the
producer principal, which may write the submissions topic and nothing else (README, "Kafka
principals and ACLs"); without KAFKA_SASL_USERNAME it connects without a login.
"""

import base64
import hashlib
import json
import os
import sys
import uuid
from pathlib import Path

from confluent_kafka import Producer


def login() -> dict[str, str]:
    """librdkafka's SASL/SCRAM (and TLS) properties from the environment."""
    username = os.environ.get("KAFKA_SASL_USERNAME")
    if not username:
        return {}
    password_file = Path(os.environ["KAFKA_SASL_PASSWORD_FILE"]).expanduser()
    options = {
        "security.protocol": os.environ.get("KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT"),
        "sasl.mechanism": os.environ.get("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512"),
        "sasl.username": username,
        "sasl.password": password_file.read_text().strip(),
    }
    if ca := os.environ.get("KAFKA_CA_FILE"):
        options["ssl.ca.location"] = ca
    return options


def main() -> None:
    bootstrap, topic, path = sys.argv[1:4]
    kind = sys.argv[4] if len(sys.argv) > 4 else "other"
    subjects = sys.argv[5:6]
    with open(path, "rb") as fh:
        content = fh.read()
    digest = "sha256:" + hashlib.sha256(content).hexdigest()
    submission = {
        "type": "artifact",
        "schema_version": 1,
        "submission_id": str(uuid.uuid4()),
        "kind": kind,
        "subjects": subjects,
        "producer": "confluent-example",
        "media_type": "application/json",
        "digest": digest,
        "content": base64.b64encode(content).decode(),
    }
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "enable.idempotence": True,
            "message.max.bytes": 12 * 1024 * 1024,
            **login(),
        }
    )
    errors = []
    producer.produce(
        topic,
        key=digest,
        value=json.dumps(submission),
        on_delivery=lambda err, msg: err and errors.append(err),
    )
    producer.flush(30)
    if errors:
        sys.exit(f"delivery failed: {errors[0]}")
    print(digest)


if __name__ == "__main__":
    main()
