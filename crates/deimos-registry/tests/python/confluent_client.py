"""Drives confluent-kafka's SchemaRegistryClient (and Avro serde) against a deimos EmbeddedRegistry.

Usage: python3 confluent_client.py URL USER:PASSWORD
"""
import json
import sys

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

url, user_info = sys.argv[1], sys.argv[2]
client = SchemaRegistryClient({"url": url, "basic.auth.user.info": user_info})


def record(fields):
    return Schema(json.dumps({"type": "record", "name": "Widget", "namespace": "com.acme", "fields": fields}), "AVRO")


v1 = record([{"name": "id", "type": "long"}])
v2 = record([{"name": "id", "type": "long"}, {"name": "name", "type": "string", "default": ""}])
bad = record([{"name": "id", "type": "long"}, {"name": "size", "type": "int"}])

assert client.register_schema("py-value", v1) == 1
assert client.register_schema("py-value", v1) == 1
fetched = client.get_schema(1)
assert json.loads(fetched.schema_str)["name"] in ("Widget", "com.acme.Widget"), fetched.schema_str
assert fetched.schema_type == "AVRO"
found = client.lookup_schema("py-value", v1)
assert (found.schema_id, found.version, found.subject) == (1, 1, "py-value"), found
assert client.test_compatibility("py-value", v2) is True
assert client.test_compatibility("py-value", bad) is False
assert client.test_compatibility("py-value", bad, version=1, verbose=True) is False
assert client.register_schema("py-value", v2) == 2
latest = client.get_latest_version("py-value")
assert (latest.schema_id, latest.version) == (2, 2), latest
assert client.get_version("py-value", 1).schema_id == 1
assert client.get_subjects() == ["py-value"]
assert client.get_versions("py-value") == [1, 2]
assert client.get_compatibility() == "BACKWARD"
try:
    client.get_compatibility("py-value")
    raise AssertionError("expected 40408")
except SchemaRegistryError as e:
    assert e.error_code == 40408, e
client.set_compatibility("py-value", "FULL")
assert client.get_compatibility("py-value") == "FULL"
try:
    client.register_schema("py-value", bad)
    raise AssertionError("expected 409")
except SchemaRegistryError as e:
    assert e.http_status_code == 409, e
try:
    client.get_schema(99)
    raise AssertionError("expected 40403")
except SchemaRegistryError as e:
    assert (e.http_status_code, e.error_code) == (404, 40403), e

# Avro serde through the registry: Confluent framing with the registered id.
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer  # noqa: E402
from confluent_kafka.serialization import MessageField, SerializationContext  # noqa: E402

gadget = json.dumps({"type": "record", "name": "Gadget", "namespace": "com.acme",
                     "fields": [{"name": "id", "type": "long"}, {"name": "label", "type": "string"}]})
ser = AvroSerializer(client, gadget)
de = AvroDeserializer(client)
ctx = SerializationContext("gadgets", MessageField.VALUE)
data = ser({"id": 7, "label": "seven"}, ctx)
assert data[0] == 0 and int.from_bytes(data[1:5], "big") == 3, data[:5]
assert de(data, ctx) == {"id": 7, "label": "seven"}

assert client.delete_subject("py-value") == [1, 2]
assert client.get_subjects() == ["gadgets-value"]
print("ok")
