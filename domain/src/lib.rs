//! The order domain: pure, synchronous, no I/O. Never imports tonic, prost or sled
//! (this crate's only dependencies are serde and thiserror, so Cargo enforces it).

mod command;
mod currency;
mod error;
mod event;
pub mod lines;
mod order;
mod status;
mod values;

pub use command::{Command, CommandRequest, Submission};
pub use error::{DomainError, Rule, ValidationError};
pub use event::{Event, RecordedEvent};
pub use lines::{Line, MAX_LINES, MAX_LINE_QUANTITY, MAX_TOTAL_CENTS};
pub use order::{Order, OrderState};
pub use status::OrderStatus;
pub use values::{
    CommandId, Currency, CustomerId, OrderId, Sku, Text, Timestamp, MAX_ID_LEN, MAX_TEXT_CHARS,
};
