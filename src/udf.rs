//! Scalar functions the SQL stages call, registered with [`register_all`].
//!
//! - `excess_p_value(observed, expected, variance, min_lift)`: the one-sided
//!   p-value of seeing `observed` follow-ups where chance gives `expected`,
//!   against a true lift of at most `min_lift`, with the customer-level
//!   variance of the count: see [`crate::significance::excess_p_value`].
//!   Null when an input is null.
//! - `change_p_value(o1, e1, v1, o2, e2, v2)`: the two-sided p-value that a
//!   pattern's follow-up rate changed between two periods, each with its
//!   followed triggers, counted triggers and the variance of the first: see
//!   [`crate::significance::change_p_value`]. Null when an input is null.

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, Float64Array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type};
use datafusion::error::Result;
use datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};
use datafusion::prelude::SessionContext;

/// The arguments of a call as Float64 arrays of one length.
fn float_args(args: &[ColumnarValue]) -> Result<Vec<Float64Array>> {
    let len = args
        .iter()
        .find_map(|a| match a {
            ColumnarValue::Array(a) => Some(a.len()),
            ColumnarValue::Scalar(_) => None,
        })
        .unwrap_or(1);
    args.iter()
        .map(|a| {
            let arr = cast(&a.to_array(len)?, &DataType::Float64)?;
            Ok(arr.as_primitive::<Float64Type>().clone())
        })
        .collect()
}

/// `f` of each row's arguments; null where any is null.
fn rowwise<const N: usize>(
    args: &[ColumnarValue],
    f: impl Fn([f64; N]) -> f64,
) -> Result<ColumnarValue> {
    let arrays = float_args(args)?;
    let len = arrays.first().map_or(0, |a| a.len());
    let out: Float64Array = (0..len)
        .map(|i| {
            arrays
                .iter()
                .all(|a| a.is_valid(i))
                .then(|| f(std::array::from_fn(|k| arrays[k].value(i))))
        })
        .collect();
    Ok(ColumnarValue::Array(Arc::new(out)))
}

/// Registers every recur function with `ctx`.
pub fn register_all(ctx: &SessionContext) {
    ctx.register_udf(create_udf(
        "excess_p_value",
        vec![DataType::Float64; 4],
        DataType::Float64,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            rowwise(args, |[o, e, v, l]| {
                crate::significance::excess_p_value(o, e, v, l)
            })
        }),
    ));
    ctx.register_udf(create_udf(
        "change_p_value",
        vec![DataType::Float64; 6],
        DataType::Float64,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            rowwise(args, |[o1, e1, v1, o2, e2, v2]| {
                crate::significance::change_p_value((o1, e1, v1), (o2, e2, v2))
            })
        }),
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn excess_p_value_in_sql() {
        let ctx = SessionContext::new();
        register_all(&ctx);
        let got = ctx
            .sql(
                "SELECT excess_p_value(10, 10.0, 0.0, 1.0) AS p, \
                        excess_p_value(NULL, 1.0, 0.0, 1.0) AS q, \
                        change_p_value(20, 10.0, 20.0, 60, 30.0, 60.0) AS c",
            )
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
        let c = got[0].column(2).as_primitive::<Float64Type>().value(0);
        assert!(c > 0.5 && c <= 1.0, "{c}");
    }
}
