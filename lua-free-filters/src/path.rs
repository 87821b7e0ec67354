//! Field paths into JSON documents: `temperature`, `metadata.user_id`, `choices.*.delta`
//! (`*` is every element of an array or every value of an object).

use serde_json::{Map, Value};

use crate::FilterError;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Key(String),
    Any,
}

/// A parsed field path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldPath {
    text: String,
    segments: Vec<Segment>,
}

impl FieldPath {
    pub fn parse(text: &str) -> Result<FieldPath, FilterError> {
        let invalid = |reason| FilterError::InvalidPath {
            path: text.to_owned(),
            reason,
        };
        if text.is_empty() {
            return Err(invalid("it is empty"));
        }
        let segments = text
            .split('.')
            .map(|part| match part {
                "" => Err(invalid("a segment is empty")),
                "*" => Ok(Segment::Any),
                key => Ok(Segment::Key(key.to_owned())),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(FieldPath {
            text: text.to_owned(),
            segments,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the path names one field (no `*`), as setting a value requires.
    pub fn is_exact(&self) -> bool {
        self.segments.iter().all(|s| matches!(s, Segment::Key(_)))
    }

    /// Sets the field, creating the objects on the way; `false` when something on the way
    /// is not an object.
    pub fn set(&self, doc: &mut Value, value: Value, replace: bool) -> bool {
        let Some((last, parents)) = self.segments.split_last() else {
            return false;
        };
        let mut at = doc;
        for segment in parents {
            let Segment::Key(key) = segment else {
                return false;
            };
            let Some(object) = at.as_object_mut() else {
                return false;
            };
            at = object
                .entry(key.clone())
                .or_insert_with(|| Value::Object(Map::new()));
        }
        let (Segment::Key(key), Some(object)) = (last, at.as_object_mut()) else {
            return false;
        };
        if replace || !object.contains_key(key) {
            object.insert(key.clone(), value);
        }
        true
    }

    /// Removes every field the path names; whether any was there.
    pub fn remove(&self, doc: &mut Value) -> bool {
        remove_at(doc, &self.segments)
    }

    /// Applies `edit` to every value the path names.
    pub fn for_each(&self, doc: &mut Value, edit: &mut dyn FnMut(&mut Value)) {
        visit(doc, &self.segments, edit);
    }
}

fn remove_at(value: &mut Value, segments: &[Segment]) -> bool {
    match segments {
        [] => false,
        [Segment::Key(key)] => value
            .as_object_mut()
            .is_some_and(|o| o.remove(key).is_some()),
        [Segment::Any] => match value {
            Value::Object(o) if !o.is_empty() => {
                o.clear();
                true
            }
            Value::Array(a) if !a.is_empty() => {
                a.clear();
                true
            }
            _ => false,
        },
        [Segment::Key(key), rest @ ..] => value
            .get_mut(key.as_str())
            .is_some_and(|child| remove_at(child, rest)),
        [Segment::Any, rest @ ..] => {
            let mut removed = false;
            for child in children(value) {
                removed |= remove_at(child, rest);
            }
            removed
        }
    }
}

fn visit(value: &mut Value, segments: &[Segment], edit: &mut dyn FnMut(&mut Value)) {
    match segments {
        [] => edit(value),
        [Segment::Key(key), rest @ ..] => {
            if let Some(child) = value.get_mut(key.as_str()) {
                visit(child, rest, edit);
            }
        }
        [Segment::Any, rest @ ..] => {
            for child in children(value) {
                visit(child, rest, edit);
            }
        }
    }
}

fn children(value: &mut Value) -> Box<dyn Iterator<Item = &mut Value> + '_> {
    match value {
        Value::Object(o) => Box::new(o.values_mut()),
        Value::Array(a) => Box::new(a.iter_mut()),
        _ => Box::new(std::iter::empty()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn sets_removes_and_visits() {
        let mut doc = json!({"model": "m", "metadata": {"user_id": "u", "team": "t"}, "choices": [{"delta": {"x": 1}}, {"delta": {"x": 2}}]});
        assert!(FieldPath::parse("metadata.user_id")
            .unwrap()
            .remove(&mut doc));
        assert!(FieldPath::parse("choices.*.delta.x")
            .unwrap()
            .remove(&mut doc));
        assert!(!FieldPath::parse("absent.field").unwrap().remove(&mut doc));
        assert_eq!(
            doc,
            json!({"model": "m", "metadata": {"team": "t"}, "choices": [{"delta": {}}, {"delta": {}}]})
        );
        let path = FieldPath::parse("a.b").unwrap();
        assert!(path.set(&mut doc, json!(1), true));
        assert!(path.set(&mut doc, json!(2), false));
        assert_eq!(
            doc["a"]["b"], 1,
            "an existing value is kept without replace"
        );
        assert!(!FieldPath::parse("model.x")
            .unwrap()
            .set(&mut doc, json!(1), true));
    }

    #[test]
    fn refuses_empty_segments() {
        assert!(FieldPath::parse("").is_err());
        assert!(FieldPath::parse("a..b").is_err());
        assert!(!FieldPath::parse("a.*").unwrap().is_exact());
    }
}
