//! Name conversions and a tiny line writer shared by the emitters.

/// `native_no_mapping` → `NATIVE_NO_MAPPING`.
pub fn upper(snake: &str) -> String {
    snake.to_ascii_uppercase()
}

/// `native_no_mapping` → `NativeNoMapping`.
pub fn camel(snake: &str) -> String {
    snake
        .split('_')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut c = p.chars();
            match c.next() {
                Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
                None => String::new(),
            }
        })
        .collect()
}

/// Accumulates generated text line by line.
#[derive(Default)]
pub struct Out(String);

impl Out {
    pub fn line(&mut self, s: impl AsRef<str>) {
        self.0.push_str(s.as_ref());
        self.0.push('\n');
    }

    pub fn blank(&mut self) {
        self.0.push('\n');
    }

    pub fn finish(self) -> String {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_names() {
        assert_eq!(camel("native_no_mapping"), "NativeNoMapping");
        assert_eq!(camel("v8"), "V8");
        assert_eq!(upper("php_jit"), "PHP_JIT");
    }
}
