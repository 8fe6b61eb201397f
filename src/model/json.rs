//! Serde adapters that keep `serde_json::Value` fields as JSON in the API and as JSON text
//! inside compact store records (postcard cannot carry a self-describing value).

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

pub fn serialize<S: Serializer>(value: &Value, serializer: S) -> Result<S::Ok, S::Error> {
    if serializer.is_human_readable() {
        value.serialize(serializer)
    } else {
        let text = serde_json::to_string(value).map_err(serde::ser::Error::custom)?;
        serializer.serialize_str(&text)
    }
}

pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Value, D::Error> {
    if deserializer.is_human_readable() {
        Value::deserialize(deserializer)
    } else {
        let text = String::deserialize(deserializer)?;
        serde_json::from_str(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};
    use serde_json::{Value, json};

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Holder {
        #[serde(with = "super")]
        content: Value,
    }

    #[test]
    fn value_survives_both_encodings() {
        let holder = Holder {
            content: json!({"ttl": 3600, "nested": [1, {"a": null}]}),
        };
        let bytes = postcard::to_stdvec(&holder).unwrap();
        assert_eq!(postcard::from_bytes::<Holder>(&bytes).unwrap(), holder);
        let text = serde_json::to_string(&holder).unwrap();
        assert!(text.contains("\"ttl\":3600"));
        assert_eq!(serde_json::from_str::<Holder>(&text).unwrap(), holder);
    }
}
