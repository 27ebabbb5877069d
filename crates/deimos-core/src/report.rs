//! Errors as a program prints them: the error and each of its causes, each said once.

use std::error::Error;

/// `error` and its sources (`Error::source`) on one line, separated by `: `. Most error types of deimos-rs,
/// like many of the ecosystem, write their cause into their own message *and* return it as their source, so
/// printing the whole chain (as `{:#}` does for `anyhow`) says each cause twice or three times; here a cause
/// whose text is already in the line is left out.
///
/// ```
/// use deimos_core::report::chain;
///
/// #[derive(Debug)]
/// struct Outer(std::io::Error);
/// impl std::fmt::Display for Outer {
///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
///         write!(f, "cannot read deimos.toml: {}", self.0)
///     }
/// }
/// impl std::error::Error for Outer {
///     fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
///         Some(&self.0)
///     }
/// }
///
/// let error = Outer(std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory"));
/// assert_eq!(chain(&error), "cannot read deimos.toml: No such file or directory");
/// ```
pub fn chain(error: &(dyn Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut next = error.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !text.is_empty() && !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        next = cause.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<dyn Error + 'static>>);

    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl Error for Layer {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.1.as_deref()
        }
    }

    #[test]
    fn a_cause_that_is_not_in_the_message_is_added() {
        let error = Layer("reading the configuration", Some(Box::new(Layer("no such file", None))));
        assert_eq!(chain(&error), "reading the configuration: no such file");
    }

    #[test]
    fn a_cause_already_in_the_message_is_said_once() {
        let io = Layer("No such file or directory (os error 2)", None);
        let read = Layer(
            "could not read the configuration file x.toml: No such file or directory (os error 2)",
            Some(Box::new(io)),
        );
        let error = Layer("reading the configuration", Some(Box::new(read)));
        assert_eq!(
            chain(&error),
            "reading the configuration: could not read the configuration file x.toml: No such file or directory (os error 2)"
        );
    }
}
