//! Kafka headers read and written through librdkafka's C API, keys as bytes.
//!
//! rdkafka's safe header API takes and returns keys as `&str`, and its readers (`Headers::iter`, `get`)
//! unwrap the UTF-8 conversion: one message whose header key is not UTF-8 would panic the listener, and every
//! member of the group after it. This module is the one place that reads and writes headers with their keys
//! as bytes; it is the crate's only unsafe code, each call documented.
#![allow(unsafe_code)]

use std::ffi::CStr;
use std::ptr;

use rdkafka::bindings as rd;
use rdkafka::message::{BorrowedHeaders, Headers as _, OwnedHeaders};

use crate::handler::Headers;

/// Every header of a message, keys and values as bytes, in order.
///
/// ```
/// use deimos_consumer::read_headers;
/// use rdkafka::message::{Header, OwnedHeaders};
///
/// let owned = OwnedHeaders::new().insert(Header { key: "origin", value: Some("test") });
/// let headers = read_headers(Some(owned.as_borrowed()));
/// assert_eq!(headers.get_str("origin"), Some("test"));
/// ```
pub fn read_headers(headers: Option<&BorrowedHeaders>) -> Headers {
    let Some(headers) = headers else {
        return Headers::new();
    };
    let native = native(headers);
    let count = headers.count();
    let mut out = Vec::with_capacity(count);
    for idx in 0..count {
        let mut name: *const std::ffi::c_char = ptr::null();
        let mut value: *const std::ffi::c_void = ptr::null();
        let mut size: usize = 0;
        // SAFETY: `native` is the live headers object behind `headers`, borrowed for this function; librdkafka
        // writes a pointer to the NUL-terminated name, the value pointer and its size, all owned by that
        // object, or returns an error for an index past the end.
        let err = unsafe { rd::rd_kafka_header_get_all(native, idx, &mut name, &mut value, &mut size) };
        if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || name.is_null() {
            continue;
        }
        // SAFETY: librdkafka keeps header names NUL-terminated; the name lives as long as `headers`.
        let key = unsafe { CStr::from_ptr(name) }.to_bytes().to_vec();
        let value = (!value.is_null()).then(|| {
            // SAFETY: `value` points at `size` bytes owned by the headers object, alive during this call.
            unsafe { std::slice::from_raw_parts(value.cast::<u8>(), size) }.to_vec()
        });
        out.push((key, value));
    }
    Headers::from_iter(out)
}

/// Headers to produce, keys as bytes (a key that is not UTF-8 is sent as it is, which rdkafka's
/// `OwnedHeaders::insert` cannot do).
///
/// ```
/// use deimos_consumer::{Headers, read_headers, write_headers};
///
/// let mut headers = Headers::new();
/// headers.push_raw(b"\xff\xfe".to_vec(), Some(b"v".to_vec()));
/// let owned = write_headers(headers.iter_raw());
/// assert_eq!(read_headers(Some(owned.as_borrowed())), headers);
/// ```
pub fn write_headers<'a>(headers: impl ExactSizeIterator<Item = (&'a [u8], Option<&'a [u8]>)>) -> OwnedHeaders {
    let owned = OwnedHeaders::new_with_capacity(headers.len());
    let native = native(owned.as_borrowed()).cast_mut();
    for (key, value) in headers {
        let (value_ptr, value_len) = match value {
            Some(v) => (
                v.as_ptr().cast::<std::ffi::c_void>(),
                isize::try_from(v.len()).unwrap_or(isize::MAX),
            ),
            None => (ptr::null(), 0),
        };
        // SAFETY: `native` is the headers object that `owned` owns (not shared with anything yet); librdkafka
        // copies the name and the value, with the lengths given, into it. It only fails on a read-only
        // headers object, which a new one is not.
        let _ = unsafe {
            rd::rd_kafka_header_add(
                native,
                key.as_ptr().cast(),
                isize::try_from(key.len()).unwrap_or(isize::MAX),
                value_ptr,
                value_len,
            )
        };
    }
    owned
}

/// The C headers object behind rdkafka's borrowed view (which is a view of exactly that pointer).
fn native(headers: &BorrowedHeaders) -> *const rd::rd_kafka_headers_t {
    ptr::from_ref(headers).cast::<rd::rd_kafka_headers_t>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_that_are_not_utf8_round_trip_as_bytes() {
        let headers: Vec<(&[u8], Option<&[u8]>)> = vec![
            (b"\xff\xfe", Some(b"\x00\x01")),
            (b"origin", Some(b"test")),
            (b"empty", None),
        ];
        let owned = write_headers(headers.clone().into_iter());
        let read = read_headers(Some(owned.as_borrowed()));
        assert_eq!(read.iter_raw().collect::<Vec<_>>(), headers);
        assert_eq!(read.get_str("origin"), Some("test"));
        assert_eq!(read.iter().count(), 2, "iter sees the UTF-8 keys");
        assert_eq!(read_headers(None), Headers::new());
    }
}
