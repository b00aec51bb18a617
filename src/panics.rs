//! What a caught panic said, for logs and error messages (job handlers, write closures, HTTP
//! handlers all catch theirs).

use std::any::Any;

pub fn message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic".into())
}
