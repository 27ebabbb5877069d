//! Secrets out of `Debug` output, error messages and logs.
//!
//! Every type of deimos-rs that can hold a secret (librdkafka settings, a database or registry URL, a
//! password) shows it through this module, so one rule decides what a secret is and one marker, [`REDACTED`],
//! stands for it:
//!
//! - a setting, query parameter or keyword whose name [`is_secret`] has its value replaced ([`value`],
//!   [`settings`]);
//! - a URL keeps its user name but not its password, and loses the values of its secret query parameters
//!   ([`url`]): `postgres://app:<redacted>@db/app?sslpassword=<redacted>`;
//! - a libpq keyword string (`host=db password=…`) and free text such as another library's error message
//!   (`password = …`, URLs inside it) lose the values of secret keywords ([`text`]);
//! - values known to be secret are cut out of any text with [`scrub`].
//!
//! What is left is meant for people: it may drop a little more than the secret (a value that runs to the next
//! space), never less.
//!
//! ```
//! use std::collections::BTreeMap;
//! use deimos_core::redact;
//!
//! assert_eq!(redact::url("postgres://app:s3cr3t@db/app"), "postgres://app:<redacted>@db/app");
//! assert_eq!(redact::url("host=db password=s3cr3t"), "host=db password=<redacted>");
//!
//! let settings = BTreeMap::from([("acks".to_string(), "all".to_string()), ("sasl.password".into(), "s3cr3t".into())]);
//! assert_eq!(format!("{:?}", redact::settings(&settings)), r#"{"acks": "all", "sasl.password": "<redacted>"}"#);
//! ```

use std::borrow::Cow;
use std::fmt;

/// What stands in for a secret.
pub const REDACTED: &str = "<redacted>";

/// Words that make a name secret wherever they appear in it (after lower-casing, with `_` and `-` read as `.`).
const SECRET_WORDS: &[&str] = &[
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "credential",
    "private",
    "apikey",
    "api.key",
    "userinfo",
    "user.info",
    "jaas",
    "authorization",
    "signature",
    "cookie",
];

/// `.`-separated parts that make a name secret.
const SECRET_PARTS: &[&str] = &["pwd", "pass", "sig"];

/// Whether a setting, URL query parameter or keyword named `name` holds a secret. Case does not matter, and
/// `_` and `-` count as `.` (`SASL_PASSWORD` is `sasl.password`).
///
/// Secret: every `sasl.*` setting; `ssl.*` settings with a `key` part (`ssl.key.pem`, `ssl.key.password`,
/// `ssl.keystore.key`); names containing `password`, `passwd`, `passphrase`, `secret`, `token`, `credential`,
/// `private`, `apikey` / `api_key`, `userinfo` / `user.info` (`basic.auth.user.info`), `jaas`, `authorization`,
/// `signature` or `cookie`; and names with a part `pwd`, `pass` or `sig`.
///
/// ```
/// use deimos_core::redact::is_secret;
///
/// assert!(is_secret("sasl.password") && is_secret("ssl.key.pem") && is_secret("SSLPASSWORD"));
/// assert!(is_secret("sasl.oauthbearer.client.secret") && is_secret("basic.auth.user.info"));
/// assert!(!is_secret("bootstrap.servers") && !is_secret("ssl.ca.location") && !is_secret("user"));
/// ```
pub fn is_secret(name: &str) -> bool {
    let name: String = name
        .trim()
        .chars()
        .map(|c| match c {
            '_' | '-' => '.',
            c => c.to_ascii_lowercase(),
        })
        .collect();
    let first = name.split('.').next().unwrap_or_default();
    (first == "sasl" && name.len() > first.len())
        || (first == "ssl" && name.split('.').any(|part| part == "key"))
        || SECRET_WORDS.iter().any(|word| name.contains(word))
        || name.split('.').any(|part| SECRET_PARTS.contains(&part))
}

/// The value of setting `name` as it may be shown: [`REDACTED`] when the name [`is_secret`], else the value
/// itself, with a URL in it passed through [`url`].
///
/// ```
/// use deimos_core::redact;
///
/// assert_eq!(redact::value("sasl.password", "s3cr3t"), "<redacted>");
/// assert_eq!(redact::value("acks", "all"), "all");
/// assert_eq!(redact::value("schema.registry.url", "https://u:s3cr3t@host"), "https://u:<redacted>@host");
/// ```
pub fn value<'a>(name: &str, value: &'a str) -> Cow<'a, str> {
    if is_secret(name) {
        Cow::Borrowed(REDACTED)
    } else if value.contains("://") {
        url(value)
    } else {
        Cow::Borrowed(value)
    }
}

/// Settings (`name → value` pairs such as `&BTreeMap<String, String>`) whose `Debug` shows each value through
/// [`value`]: for a `Debug` impl of a type that holds librdkafka settings.
///
/// ```
/// use std::collections::BTreeMap;
/// use deimos_core::redact;
///
/// let settings = BTreeMap::from([("sasl.username", "app"), ("linger.ms", "5")]);
/// assert_eq!(format!("{:?}", redact::settings(&settings)), r#"{"linger.ms": "5", "sasl.username": "<redacted>"}"#);
/// ```
pub fn settings<I>(settings: I) -> Settings<I> {
    Settings(settings)
}

/// See [`settings`].
#[derive(Clone, Copy)]
pub struct Settings<I>(I);

impl<I, K, V> fmt::Debug for Settings<I>
where
    I: IntoIterator<Item = (K, V)> + Clone,
    K: AsRef<str>,
    V: AsRef<str>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (name, shown) in self.0.clone() {
            let name = name.as_ref();
            map.entry(&name, &value(name, shown.as_ref()));
        }
        map.finish()
    }
}

/// A connection string as it may be shown. A URL (`scheme://…`: `postgres://`, `mysql://`, `http(s)://`, …)
/// keeps its user name but not its password, and loses the values of its secret query parameters
/// (`?password=`, `sslpassword=`, `token=`, `api_key=`, …). Anything else (a libpq keyword string such as
/// `host=db user=app password=…`, a SQLite path) goes through [`text`].
///
/// URLs are read as libpq reads them, not as a browser does: the user information runs to the last `@` before
/// the first `/`, so a password holding a raw `?`, `#` or `@` is still hidden.
///
/// ```
/// use deimos_core::redact;
///
/// assert_eq!(redact::url("mysql://root:s3cr3t@db:3306/app"), "mysql://root:<redacted>@db:3306/app");
/// assert_eq!(redact::url("postgres://db/app?user=app&password=s3cr3t"), "postgres://db/app?user=app&password=<redacted>");
/// assert_eq!(redact::url("sqlite://outbox.db"), "sqlite://outbox.db");
/// ```
pub fn url(connection: &str) -> Cow<'_, str> {
    let start = connection.len() - connection.trim_start().len();
    let Some(scheme) = scheme_len(&connection[start..]) else {
        return text(connection);
    };
    let after_scheme = start + scheme + "://".len();
    let mut out = String::with_capacity(connection.len() + REDACTED.len());
    out.push_str(&connection[..after_scheme]);
    push_url_rest(&connection[after_scheme..], &mut out);
    unless_unchanged(connection, out)
}

/// Free text (another library's error message, a libpq keyword string, a line of TOML) as it may be shown:
/// the value after `name=` or `name = ` (or `"name": `) is replaced when the name [`is_secret`], and every
/// `scheme://…` in it goes through [`url`]. A value ends at the next white space, or at its closing quote when
/// it is quoted (`'…'` or `"…"`, with `\` escapes).
///
/// ```
/// use deimos_core::redact;
///
/// assert_eq!(
///     redact::text("could not connect to postgres://app:s3cr3t@db/app: timeout"),
///     "could not connect to postgres://app:<redacted>@db/app: timeout"
/// );
/// assert_eq!(redact::text("3 | password = 's3 cr3t' # old"), "3 | password = <redacted> # old");
/// ```
pub fn text(text: &str) -> Cow<'_, str> {
    let bytes = text.as_bytes();
    let mut out = String::new();
    // `text[copied..i]` is still to be copied to `out`. Matches start and end on ASCII bytes only, so every
    // slice below is on a char boundary.
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        // Only an ASCII byte can start a URL or a pair, so `text[i..]` is on a char boundary.
        let word_start = bytes[i].is_ascii() && (i == 0 || !is_word_byte(bytes[i - 1]));
        if word_start {
            if let Some(scheme) = scheme_len(&text[i..]) {
                let end = token_end(bytes, i + scheme + "://".len());
                out.push_str(&text[copied..i]);
                out.push_str(&url(&text[i..end]));
                i = end;
                copied = end;
                continue;
            }
            if let Some(pair) = pair_at(text, i) {
                if pair.secret {
                    out.push_str(&text[copied..pair.value_start]);
                    out.push_str(REDACTED);
                    copied = pair.value_end;
                    i = pair.value_end;
                } else {
                    // The value may hold a URL or more pairs: read on from its start.
                    i = pair.value_start;
                }
                continue;
            }
        }
        i += 1;
    }
    if copied == 0 {
        return Cow::Borrowed(text);
    }
    out.push_str(&text[copied..]);
    unless_unchanged(text, out)
}

/// `text` with every occurrence of each of `secrets` (values known to be secret) replaced by [`REDACTED`].
/// Longer secrets win where two overlap; empty ones are ignored.
///
/// ```
/// use deimos_core::redact;
///
/// assert_eq!(
///     redact::scrub("Invalid value \"s3cr3t\" for sasl.password", ["s3cr3t"]),
///     "Invalid value \"<redacted>\" for sasl.password"
/// );
/// ```
pub fn scrub<S: AsRef<str>>(text: &str, secrets: impl IntoIterator<Item = S>) -> Cow<'_, str> {
    let mut secrets: Vec<S> = secrets.into_iter().filter(|s| !s.as_ref().is_empty()).collect();
    secrets.sort_by_key(|s| std::cmp::Reverse(s.as_ref().len()));
    if !secrets.iter().any(|s| text.contains(s.as_ref())) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        match secrets.iter().find(|s| rest.starts_with(s.as_ref())) {
            Some(secret) => {
                out.push_str(REDACTED);
                rest = &rest[secret.as_ref().len()..];
            }
            None => {
                out.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    Cow::Owned(out)
}

/// An error of creating a librdkafka client from `config`, without the values of its secret settings.
///
/// rdkafka prints the value of a setting librdkafka refused (`KafkaError::ClientConfig`), and librdkafka may
/// quote one when it cannot create the client (`KafkaError::ClientCreation`): the value of every setting of
/// `config` that [`value`] hides is replaced by [`REDACTED`] wherever it appears, and the messages go through
/// [`text`]. Other errors are returned as they are. Every `create` of a client from settings should map its
/// error through this.
///
/// ```
/// use deimos_core::redact;
/// use rdkafka::ClientConfig;
/// use rdkafka::producer::BaseProducer;
///
/// let mut config = ClientConfig::new();
/// config.set("sasl.oauthbearer.method", "s3cr3t");
/// let error = config.create::<BaseProducer>().err().map(|e| redact::kafka_error(e, &config));
/// let shown = format!("{error:?}");
/// assert!(shown.contains("sasl.oauthbearer.method") && !shown.contains("s3cr3t"), "{shown}");
/// ```
#[cfg(feature = "rdkafka")]
pub fn kafka_error(error: rdkafka::error::KafkaError, config: &rdkafka::ClientConfig) -> rdkafka::error::KafkaError {
    use rdkafka::error::KafkaError;
    let mut secrets: Vec<String> = config
        .config_map()
        .into_iter()
        .filter(|(name, given)| value(name, given) != *given)
        .map(|(_, given)| given.to_string())
        .collect();
    let mut clean = |message: &str, also: Option<&str>| {
        secrets.extend(also.map(str::to_string));
        text(&scrub(message, &secrets)).into_owned()
    };
    match error {
        KafkaError::ClientConfig(code, description, name, given) => {
            let shown = value(&name, &given).into_owned();
            let hidden = (shown != given).then_some(given.as_str());
            KafkaError::ClientConfig(code, clean(&description, hidden), name, shown)
        }
        KafkaError::ClientCreation(message) => KafkaError::ClientCreation(clean(&message, None)),
        other => other,
    }
}

fn unless_unchanged(original: &str, redacted: String) -> Cow<'_, str> {
    if redacted == original {
        Cow::Borrowed(original)
    } else {
        Cow::Owned(redacted)
    }
}

/// The length of the scheme when `s` starts with `scheme://` (a letter, then letters, digits, `+`, `-`, `.`).
fn scheme_len(s: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    if !bytes.first()?.is_ascii_alphabetic() {
        return None;
    }
    let len = bytes
        .iter()
        .position(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.')))?;
    s[len..].starts_with("://").then_some(len)
}

/// Writes the part of a URL after `scheme://` to `out`, without its password and secret query values.
fn push_url_rest(rest: &str, out: &mut String) {
    let mut query_from = 0;
    if let Some(at) = userinfo_end(rest) {
        let userinfo = &rest[..at];
        if let Some((user, _password)) = userinfo.split_once(':') {
            out.push_str(user);
            out.push(':');
            out.push_str(REDACTED);
            out.push('@');
            query_from = at + 1;
        }
    }
    let after = &rest[query_from..];
    match after.find('?') {
        Some(q) => {
            out.push_str(&after[..=q]);
            push_query(&after[q + 1..], out);
        }
        None => out.push_str(after),
    }
}

/// Where the user information of a URL (after `scheme://`) ends: the last `@` before the first `/` (libpq's
/// reading), else the last `@` before the query (a password with a raw `/`).
fn userinfo_end(rest: &str) -> Option<usize> {
    let authority = rest.find('/').unwrap_or(rest.len());
    rest[..authority].rfind('@').or_else(|| {
        let path = rest.find(['?', '#']).unwrap_or(rest.len());
        rest[..path].rfind('@')
    })
}

/// Writes a query string (after `?`) to `out`, with the values of its secret parameters replaced.
fn push_query(query: &str, out: &mut String) {
    for (index, param) in query.split('&').enumerate() {
        if index > 0 {
            out.push('&');
        }
        match param.split_once('=') {
            Some((name, _)) if is_secret(&percent_decoded(name)) => {
                out.push_str(name);
                out.push('=');
                out.push_str(REDACTED);
            }
            _ => out.push_str(param),
        }
    }
}

fn percent_decoded(s: &str) -> Cow<'_, str> {
    if !s.contains(['%', '+']) {
        return Cow::Borrowed(s);
    }
    // A query's `+` is a space; then percent-encoding's decoder (which leaves bad escapes as they are).
    let spaced = s.replace('+', " ");
    Cow::Owned(
        percent_encoding::percent_decode_str(&spaced)
            .decode_utf8_lossy()
            .into_owned(),
    )
}

/// A byte of a name (`sasl.password`, `api_key`, `ssl-key`).
fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')
}

/// Where a URL in free text ends: at white space, a quote, `<`, `>` or the end.
fn token_end(bytes: &[u8], from: usize) -> usize {
    bytes[from..]
        .iter()
        .position(|b| b.is_ascii_whitespace() || matches!(b, b'"' | b'\'' | b'`' | b'<' | b'>'))
        .map_or(bytes.len(), |p| from + p)
}

/// The index of the quote `quote` closing a string that starts at `from`, skipping `\`-escaped bytes.
fn closing_quote(bytes: &[u8], from: usize, quote: u8) -> Option<usize> {
    let mut i = from;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b if b == quote => return Some(i),
            _ => i += 1,
        }
    }
    None
}

/// A `name = value` pair found in free text.
struct Pair {
    value_start: usize,
    value_end: usize,
    secret: bool,
}

/// The pair starting at `i`: a name (bare, or quoted), optional blanks, `=` (or `:` after a quoted name),
/// optional blanks, and a value (quoted, or up to white space).
fn pair_at(text: &str, i: usize) -> Option<Pair> {
    let bytes = text.as_bytes();
    let blanks = |mut j: usize| {
        while j < bytes.len() && matches!(bytes[j], b' ' | b'\t') {
            j += 1;
        }
        j
    };
    let (name, quoted, name_end) = match bytes[i] {
        quote @ (b'"' | b'\'') => {
            let close = closing_quote(bytes, i + 1, quote)?;
            (&text[i + 1..close], true, close + 1)
        }
        b if is_word_byte(b) => {
            let end = bytes[i..]
                .iter()
                .position(|b| !is_word_byte(*b))
                .map_or(bytes.len(), |p| i + p);
            (&text[i..end], false, end)
        }
        _ => return None,
    };
    let separator = blanks(name_end);
    match bytes.get(separator) {
        Some(b'=') if bytes.get(separator + 1) != Some(&b'=') => {}
        Some(b':') if quoted => {}
        _ => return None,
    }
    let value_start = blanks(separator + 1);
    let value_end = match bytes.get(value_start) {
        Some(&quote @ (b'"' | b'\'')) => closing_quote(bytes, value_start + 1, quote).map_or(bytes.len(), |c| c + 1),
        _ => bytes[value_start..]
            .iter()
            .position(u8::is_ascii_whitespace)
            .map_or(bytes.len(), |p| value_start + p),
    };
    Some(Pair {
        value_start,
        value_end,
        secret: is_secret(name),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::panic, clippy::unwrap_used)]
    use std::collections::{BTreeMap, HashMap};

    use super::*;

    const SECRET: &str = "s3cr3t-PASS";

    #[test]
    fn secret_names() {
        for name in [
            "password",
            "PASSWORD",
            "sasl.password",
            "SASL_PASSWORD",
            "sasl.username",
            "sasl.mechanism",
            "sasl.jaas.config",
            "sasl.oauthbearer.client.secret",
            "sasl.oauthbearer.config",
            "ssl.key.password",
            "ssl.key.pem",
            "ssl.key.location",
            "ssl_key",
            "ssl.keystore.password",
            "ssl.keystore.key",
            "ssl.truststore.password",
            "basic.auth.user.info",
            "schema.registry.basic.auth.user.info",
            "bearer.auth.token",
            "sslpassword",
            "pwd",
            "PWD",
            "db_pass",
            "api_key",
            "apiKey",
            "X-Api-Key",
            "access_token",
            "client_secret",
            "Authorization",
            "sig",
            "private_key",
            "passphrase",
        ] {
            assert!(is_secret(name), "{name} is a secret");
        }
        for name in [
            "acks",
            "bootstrap.servers",
            "security.protocol",
            "ssl.ca.location",
            "ssl.certificate.location",
            "ssl.keystore.location",
            "ssl.endpoint.identification.algorithm",
            "sasl",
            "user",
            "username",
            "host",
            "dbname",
            "sslmode",
            "sslkey",
            "linger.ms",
            "client.id",
            "compression.type",
            "key.serializer",
            "passive",
            "",
        ] {
            assert!(!is_secret(name), "{name} is not a secret");
        }
    }

    #[test]
    fn setting_values() {
        assert_eq!(value("sasl.password", SECRET), REDACTED);
        assert_eq!(value("SSL.Key.Password", SECRET), REDACTED);
        assert_eq!(value("acks", "all"), "all");
        assert!(matches!(value("acks", "all"), Cow::Borrowed("all")));
        assert_eq!(
            value("schema.registry.url", &format!("https://key:{SECRET}@registry")),
            "https://key:<redacted>@registry"
        );
    }

    #[test]
    fn settings_maps() {
        let map = BTreeMap::from([
            ("acks".to_string(), "all".to_string()),
            ("sasl.password".to_string(), SECRET.to_string()),
            ("ssl.key.password".to_string(), SECRET.to_string()),
            ("Basic.Auth.User.Info".to_string(), format!("key:{SECRET}")),
        ]);
        let shown = format!("{:?}", settings(&map));
        assert!(!shown.contains(SECRET), "{shown}");
        assert!(shown.contains(r#""acks": "all""#), "{shown}");
        assert!(shown.contains(r#""sasl.password": "<redacted>""#), "{shown}");
        let hash: HashMap<&str, &str> = HashMap::from([("ssl.keystore.password", SECRET), ("linger.ms", "5")]);
        let shown = format!("{:#?}", settings(&hash));
        assert!(!shown.contains(SECRET) && shown.contains("linger.ms"), "{shown}");
        let pairs = [("token", SECRET)];
        assert_eq!(format!("{:?}", settings(pairs)), r#"{"token": "<redacted>"}"#);
    }

    #[test]
    fn url_user_info() {
        for (given, shown) in [
            ("postgres://app:s3cr3t-PASS@db/app", "postgres://app:<redacted>@db/app"),
            (
                "postgresql://app:s3cr3t-PASS@db:5432/app",
                "postgresql://app:<redacted>@db:5432/app",
            ),
            (
                "mysql://root:s3cr3t-PASS@127.0.0.1:3306/test",
                "mysql://root:<redacted>@127.0.0.1:3306/test",
            ),
            ("mariadb://root:s3cr3t-PASS@h/test", "mariadb://root:<redacted>@h/test"),
            (
                "https://key:s3cr3t-PASS@registry.example.com/",
                "https://key:<redacted>@registry.example.com/",
            ),
            (
                "http://key:s3cr3t-PASS@localhost:8081",
                "http://key:<redacted>@localhost:8081",
            ),
            // Raw `@`, `?`, `#` and `/` in the password.
            ("postgres://app:s3cr@t-PASS@db/app", "postgres://app:<redacted>@db/app"),
            (
                "postgres://app:s3c?r#3t-PASS@db/app",
                "postgres://app:<redacted>@db/app",
            ),
            ("postgres://app:s3/cr3t-PASS@db/app", "postgres://app:<redacted>@db/app"),
            // Several hosts, a socket directory.
            (
                "postgres://app:s3cr3t-PASS@h1:5432,h2:5433/app",
                "postgres://app:<redacted>@h1:5432,h2:5433/app",
            ),
            (
                "postgres://app:s3cr3t-PASS@%2Fvar%2Frun/app",
                "postgres://app:<redacted>@%2Fvar%2Frun/app",
            ),
            // An empty password is still a password.
            ("postgres://app:@db/app", "postgres://app:<redacted>@db/app"),
            (
                "  postgres://app:s3cr3t-PASS@db/app",
                "  postgres://app:<redacted>@db/app",
            ),
        ] {
            assert_eq!(url(given), shown, "{given}");
        }
    }

    #[test]
    fn url_query_parameters() {
        for (given, shown) in [
            (
                "postgres://db/app?user=app&password=s3cr3t-PASS",
                "postgres://db/app?user=app&password=<redacted>",
            ),
            (
                "postgres://app@db/app?sslmode=require&sslpassword=s3cr3t-PASS&application_name=relay",
                "postgres://app@db/app?sslmode=require&sslpassword=<redacted>&application_name=relay",
            ),
            (
                "mysql://root:s3cr3t-PASS@h/test?pwd=s3cr3t-PASS",
                "mysql://root:<redacted>@h/test?pwd=<redacted>",
            ),
            (
                "https://registry/?access_token=s3cr3t-PASS&x=1",
                "https://registry/?access_token=<redacted>&x=1",
            ),
            (
                "https://registry?API_KEY=s3cr3t-PASS",
                "https://registry?API_KEY=<redacted>",
            ),
            (
                "https://registry/?Pass%77ord=s3cr3t-PASS",
                "https://registry/?Pass%77ord=<redacted>",
            ),
            (
                "https://registry/?token=s3cr3t-PASS#frag",
                "https://registry/?token=<redacted>",
            ),
            (
                "https://registry/?secret=a@s3cr3t-PASS",
                "https://registry/?secret=<redacted>",
            ),
            ("https://h?token=s3cr3t-PASS@x", "https://h?token=<redacted>"),
        ] {
            assert_eq!(url(given), shown, "{given}");
        }
    }

    #[test]
    fn urls_without_secrets_are_untouched() {
        for given in [
            "postgres://app@db/app",
            "postgres://db/app?sslmode=require&user=app",
            "mysql://root@127.0.0.1:3306/test",
            "sqlite://outbox.db",
            "sqlite:outbox.db",
            ":memory:",
            "/tmp/outbox.sqlite3",
            "http://localhost:8081",
            "https://registry.example.com/prefix/",
            "postgres://db:5432/app?email=a@b.example",
            "",
        ] {
            assert!(matches!(url(given), Cow::Borrowed(_)), "{given}");
        }
    }

    #[test]
    fn libpq_keyword_strings() {
        for (given, shown) in [
            (
                "host=db port=5432 user=app password=s3cr3t-PASS dbname=app",
                "host=db port=5432 user=app password=<redacted> dbname=app",
            ),
            (
                "host=db password = s3cr3t-PASS dbname=app",
                "host=db password = <redacted> dbname=app",
            ),
            (
                "host=db password='s3cr3t PASS \\' more' dbname=app",
                "host=db password=<redacted> dbname=app",
            ),
            ("PASSWORD=s3cr3t-PASS", "PASSWORD=<redacted>"),
            (
                "host=db sslpassword=s3cr3t-PASS sslkey=/k.pem",
                "host=db sslpassword=<redacted> sslkey=/k.pem",
            ),
            (
                "host=db password='unterminated s3cr3t-PASS",
                "host=db password=<redacted>",
            ),
            ("host=db password=", "host=db password=<redacted>"),
        ] {
            assert_eq!(url(given), shown, "{given}");
        }
        assert!(matches!(url("host=db user=app dbname=app"), Cow::Borrowed(_)));
    }

    #[test]
    fn free_text() {
        for (given, shown) in [
            (
                "could not connect to the outbox database mysql://root:s3cr3t-PASS@h/test: refused",
                "could not connect to the outbox database mysql://root:<redacted>@h/test: refused",
            ),
            (
                "at `postgres://u:s3cr3t-PASS@h/db`.",
                "at `postgres://u:<redacted>@h/db`.",
            ),
            (
                "TOML parse error at line 3, column 12\n  |\n3 | password = s3cr3t-PASS\n  |            ^\nstring values must be quoted",
                "TOML parse error at line 3, column 12\n  |\n3 | password = <redacted>\n  |            ^\nstring values must be quoted",
            ),
            (
                r#"settings = { "sasl.password" = "s3cr3t-PASS", acks = "all" }"#,
                r#"settings = { "sasl.password" = <redacted>, acks = "all" }"#,
            ),
            (
                r#"{"sasl.password": "s3cr3t-PASS", "acks": "all"}"#,
                r#"{"sasl.password": <redacted>, "acks": "all"}"#,
            ),
            (
                "database_url=postgres://u:s3cr3t-PASS@h/db",
                "database_url=postgres://u:<redacted>@h/db",
            ),
            (
                "DEIMOS_KAFKA__SETTINGS__SASL_PASSWORD=s3cr3t-PASS",
                "DEIMOS_KAFKA__SETTINGS__SASL_PASSWORD=<redacted>",
            ),
            ("é password=s3cr3t-PASS ü", "é password=<redacted> ü"),
        ] {
            assert_eq!(text(given), shown, "{given}");
        }
        for given in [
            "the registry refused the request; set or fix the credentials (basic auth user and password, or bearer token)",
            "Access denied for user 'app'@'10.0.0.1' (using password: YES)",
            "if a == b then token",
            "unknown field `pasword`, expected one of `user`, `password`",
            "ünïcödé = fine",
        ] {
            assert!(matches!(text(given), Cow::Borrowed(_)), "{given} -> {}", text(given));
        }
    }

    #[test]
    fn scrubbing_known_values() {
        assert_eq!(
            scrub("a s3cr3t-PASS b s3cr3t-PASS", [SECRET]),
            "a <redacted> b <redacted>"
        );
        assert_eq!(scrub("abcdef", ["abc", "abcdef"]), REDACTED);
        assert_eq!(scrub("red", ["red", "d"]), REDACTED);
        assert!(matches!(scrub("nothing here", [SECRET, ""]), Cow::Borrowed(_)));
        assert!(matches!(scrub("nothing here", Vec::<String>::new()), Cow::Borrowed(_)));
        assert_eq!(scrub("ü-s3cr3t-PASS-ü", [SECRET.to_string()]), "ü-<redacted>-ü");
    }

    #[test]
    fn odd_text_never_panics() {
        let pieces = [
            "",
            "é",
            "ü=",
            "=",
            "==",
            "'",
            "\"",
            "\\",
            "password",
            "PWD",
            " ",
            "\n",
            "://",
            "a://",
            "@",
            ":",
            "?",
            "&",
            "#",
            "/",
            "%",
            "%7",
            "ssl.key",
            "x=",
            "'é",
            "\"é\\",
            "\u{1F511}",
        ];
        for a in pieces {
            for b in pieces {
                for c in pieces {
                    let given = format!("{a}{b}{c}");
                    let _ = (text(&given), url(&given), is_secret(&given), scrub(&given, [b, c]));
                    let _ = url(&format!("postgres://{given}"));
                }
            }
        }
    }

    #[cfg(feature = "rdkafka")]
    #[test]
    fn kafka_errors() {
        use rdkafka::config::ClientConfig;
        use rdkafka::error::KafkaError;
        use rdkafka::producer::BaseProducer;

        let config = |settings: &[(&str, &str)]| {
            let mut config = ClientConfig::new();
            for (name, given) in settings {
                config.set(*name, *given);
            }
            config
        };
        // librdkafka refuses an unknown name (here a misspelt one) and an invalid value, and rdkafka prints both;
        // it cannot create a client with a SASL mechanism it does not know, and says which.
        let cases: [&[(&str, &str)]; 3] = [
            &[("sasl.pasword", SECRET)],
            &[("sasl.oauthbearer.method", SECRET)],
            &[("sasl.mechanism", SECRET), ("security.protocol", "sasl_plaintext")],
        ];
        for settings in cases {
            let config = config(settings);
            let Err(raw) = config.create::<BaseProducer>() else {
                panic!("librdkafka accepted {settings:?}");
            };
            let redacted = kafka_error(raw, &config);
            for shown in [redacted.to_string(), format!("{redacted:?}")] {
                assert!(!shown.contains(SECRET) && shown.contains(REDACTED), "{shown}");
            }
        }
        let config = config(&[("linger.ms", "not-a-number")]);
        let kept = config.create::<BaseProducer>().err().map(|e| kafka_error(e, &config));
        assert!(format!("{kept:?}").contains("not-a-number"), "{kept:?}");
        let created = kafka_error(
            KafkaError::ClientCreation(format!("bad sasl.password={SECRET}")),
            &ClientConfig::new(),
        );
        assert!(!created.to_string().contains(SECRET), "{created}");
    }
}
