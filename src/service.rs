//! The built-in services: what `wharf echo`, `wharf line` and `wharf chat` run. Each is the
//! [`Handler`](crate::Handler) of a protocol in [`crate::proto`], and lives beside it.

pub use crate::proto::chat::{Chat, ChatSession};
pub use crate::proto::echo::Echo;
pub use crate::proto::line::Line;
