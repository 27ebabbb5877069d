//! Credentials never show: not in the builders' `Debug` output, not in the errors of building a client.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use deimos_registry::{EmbeddedRegistry, HttpRegistry, RegistryError};

const SECRET: &str = "s3cr3t-PASS";

fn assert_hidden(shown: &str) {
    assert!(!shown.contains(SECRET), "a secret shows in: {shown}");
}

fn assert_error_hidden(error: &RegistryError) {
    for shown in [error.to_string(), format!("{error:?}"), format!("{error:#?}")] {
        assert_hidden(&shown);
    }
}

#[test]
fn http_registry_builder_debug_hides_credentials() {
    for builder in [
        HttpRegistry::builder(format!("https://key:{SECRET}@registry.example.com/")),
        HttpRegistry::builder(format!("https://registry.example.com/?api_key={SECRET}&x=1")),
        HttpRegistry::builder("https://registry.example.com/").basic_auth("key", SECRET),
        HttpRegistry::builder("https://registry.example.com/").bearer_token(SECRET),
    ] {
        for shown in [format!("{builder:?}"), format!("{builder:#?}")] {
            assert_hidden(&shown);
            assert!(shown.contains("registry.example.com"), "the host still shows: {shown}");
        }
        let registry = builder.build().unwrap();
        assert_hidden(&format!("{registry:?}"));
        assert_hidden(registry.url());
    }
}

#[test]
fn http_registry_build_errors_hide_credentials() {
    for url in [
        format!("ftp://key:{SECRET}@registry.example.com/"),
        format!("http://key:{SECRET}@registry.example.com:99999/"),
        format!("https://registry.example.com:bad/?token={SECRET}"),
        format!("registry.example.com user=key password={SECRET}"),
    ] {
        let builder = HttpRegistry::builder(url.clone()).basic_auth("key", SECRET);
        let Err(error) = builder.build() else {
            panic!("built a client of {url}");
        };
        assert!(matches!(error, RegistryError::Config { .. }), "{error:?}");
        assert_error_hidden(&error);
    }
    let error = HttpRegistry::builder("https://registry.example.com/")
        .bearer_token(format!("a\n{SECRET}"))
        .build()
        .unwrap_err();
    assert_error_hidden(&error);
}

#[test]
fn embedded_registry_builder_debug_hides_credentials() {
    let builder = EmbeddedRegistry::builder()
        .basic_auth("key", SECRET)
        .bearer_token(SECRET);
    for shown in [format!("{builder:?}"), format!("{builder:#?}")] {
        assert_hidden(&shown);
        assert!(shown.contains("key"), "the user still shows: {shown}");
    }
}
