//! Reading one top-level field of a serde value without serializing the rest of it.

use std::fmt;

use serde::Serialize;
use serde::ser::{self, Impossible, SerializeMap, SerializeStruct};
use serde_json::Value as Json;

use crate::error::KeyError;

/// The value of the top-level field `field` of a value that serializes as a struct or a map, as JSON.
///
/// Only that field is converted; the other fields are skipped unserialized. Returns `Ok(None)` when the
/// value has no such field (for example an `Option` field skipped with `skip_serializing_if`), and an error
/// when the value is not a struct or a map.
pub fn serialized_field<T: Serialize + ?Sized>(value: &T, field: &str) -> Result<Option<Json>, KeyError> {
    value.serialize(Grab { field }).map_err(|e| KeyError::TypedKey {
        field: field.to_string(),
        message: e.0,
    })
}

#[derive(Debug)]
struct GrabError(String);

impl fmt::Display for GrabError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for GrabError {}

impl ser::Error for GrabError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        GrabError(msg.to_string())
    }
}

fn to_json<T: Serialize + ?Sized>(v: &T) -> Result<Json, GrabError> {
    serde_json::to_value(v).map_err(|e| GrabError(e.to_string()))
}

struct Grab<'a> {
    field: &'a str,
}

impl Grab<'_> {
    fn not_a_struct<T>(what: &str) -> Result<T, GrabError> {
        Err(GrabError(format!(
            "the value serializes as {what}, not as a struct or map; pass the key explicitly instead"
        )))
    }
}

macro_rules! reject {
    ($($method:ident($($arg:ty),*) => $what:literal;)*) => {$(
        fn $method(self, $(_: $arg),*) -> Result<Self::Ok, Self::Error> {
            Self::not_a_struct($what)
        }
    )*};
}

impl<'a> ser::Serializer for Grab<'a> {
    type Ok = Option<Json>;
    type Error = GrabError;
    type SerializeSeq = Impossible<Option<Json>, GrabError>;
    type SerializeTuple = Impossible<Option<Json>, GrabError>;
    type SerializeTupleStruct = Impossible<Option<Json>, GrabError>;
    type SerializeTupleVariant = Impossible<Option<Json>, GrabError>;
    type SerializeMap = MapGrab<'a>;
    type SerializeStruct = StructGrab<'a>;
    type SerializeStructVariant = Impossible<Option<Json>, GrabError>;

    reject! {
        serialize_bool(bool) => "a boolean";
        serialize_i8(i8) => "a number";
        serialize_i16(i16) => "a number";
        serialize_i32(i32) => "a number";
        serialize_i64(i64) => "a number";
        serialize_u8(u8) => "a number";
        serialize_u16(u16) => "a number";
        serialize_u32(u32) => "a number";
        serialize_u64(u64) => "a number";
        serialize_f32(f32) => "a number";
        serialize_f64(f64) => "a number";
        serialize_char(char) => "a string";
        serialize_str(&str) => "a string";
        serialize_bytes(&[u8]) => "bytes";
        serialize_none() => "None";
        serialize_unit() => "()";
        serialize_unit_struct(&'static str) => "a unit struct";
        serialize_unit_variant(&'static str, u32, &'static str) => "a unit enum variant";
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<Self::Ok, Self::Error> {
        value.serialize(self)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<Self::Ok, Self::Error> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _value: &T,
    ) -> Result<Self::Ok, Self::Error> {
        Self::not_a_struct("an enum variant")
    }

    fn serialize_seq(self, _len: Option<usize>) -> Result<Self::SerializeSeq, Self::Error> {
        Self::not_a_struct("a sequence")
    }

    fn serialize_tuple(self, _len: usize) -> Result<Self::SerializeTuple, Self::Error> {
        Self::not_a_struct("a tuple")
    }

    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleStruct, Self::Error> {
        Self::not_a_struct("a tuple struct")
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleVariant, Self::Error> {
        Self::not_a_struct("an enum variant")
    }

    fn serialize_map(self, _len: Option<usize>) -> Result<Self::SerializeMap, Self::Error> {
        Ok(MapGrab {
            field: self.field,
            matched: false,
            found: None,
        })
    }

    fn serialize_struct(self, _name: &'static str, _len: usize) -> Result<Self::SerializeStruct, Self::Error> {
        Ok(StructGrab {
            field: self.field,
            found: None,
        })
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStructVariant, Self::Error> {
        Self::not_a_struct("an enum variant")
    }
}

struct StructGrab<'a> {
    field: &'a str,
    found: Option<Json>,
}

impl SerializeStruct for StructGrab<'_> {
    type Ok = Option<Json>;
    type Error = GrabError;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, key: &'static str, value: &T) -> Result<(), Self::Error> {
        if key == self.field {
            self.found = Some(to_json(value)?);
        }
        Ok(())
    }

    fn end(self) -> Result<Self::Ok, Self::Error> {
        Ok(self.found)
    }
}

struct MapGrab<'a> {
    field: &'a str,
    matched: bool,
    found: Option<Json>,
}

impl SerializeMap for MapGrab<'_> {
    type Ok = Option<Json>;
    type Error = GrabError;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Self::Error> {
        self.matched = matches!(to_json(key), Ok(Json::String(k)) if k == self.field);
        Ok(())
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Self::Error> {
        if std::mem::take(&mut self.matched) {
            self.found = Some(to_json(value)?);
        }
        Ok(())
    }

    fn end(self) -> Result<Self::Ok, Self::Error> {
        Ok(self.found)
    }
}
