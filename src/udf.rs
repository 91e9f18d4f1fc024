//! Scalar functions the SQL stages call, registered with [`register_all`].
//!
//! - `excess_p_value(observed, expected, variance, min_lift)`: the one-sided
//!   p-value of seeing `observed` follow-ups where chance gives `expected`,
//!   against a true lift of at most `min_lift`, with the customer-level
//!   variance of the count: see [`crate::significance::excess_p_value`].
//!   Null when an input is null.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Float64Array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::error::Result;
use datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};
use datafusion::prelude::SessionContext;

fn excess_p_value(args: &[ColumnarValue]) -> Result<ColumnarValue> {
    let len = args
        .iter()
        .find_map(|a| match a {
            ColumnarValue::Array(a) => Some(a.len()),
            ColumnarValue::Scalar(_) => None,
        })
        .unwrap_or(1);
    let arrays = args
        .iter()
        .map(|a| {
            let arr = a.to_array(len)?;
            Ok(cast(&arr, &DataType::Float64)?)
        })
        .collect::<Result<Vec<ArrayRef>>>()?;
    let out: Float64Array = crate::significance::excess_p_values([
        arrays[0].as_ref(),
        arrays[1].as_ref(),
        arrays[2].as_ref(),
        arrays[3].as_ref(),
    ]);
    Ok(ColumnarValue::Array(Arc::new(out)))
}

/// Registers every recur function with `ctx`.
pub fn register_all(ctx: &SessionContext) {
    ctx.register_udf(create_udf(
        "excess_p_value",
        vec![DataType::Float64; 4],
        DataType::Float64,
        Volatility::Immutable,
        Arc::new(excess_p_value),
    ));
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Array;

    #[tokio::test]
    async fn excess_p_value_in_sql() {
        let ctx = SessionContext::new();
        register_all(&ctx);
        let got = ctx
            .sql("SELECT excess_p_value(10, 10.0, 0.0, 1.0) AS p, excess_p_value(NULL, 1.0, 0.0, 1.0) AS q")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let p = got[0]
            .column(0)
            .as_any()
            .downcast_ref::<Float64Array>()
            .unwrap();
        assert!((p.value(0) - 0.542_070_285_5).abs() < 1e-9);
        assert!(got[0].column(1).is_null(0));
    }
}
