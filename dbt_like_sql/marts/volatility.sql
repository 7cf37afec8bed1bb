-- description: Realised volatility per venue/asset from the finest bars available (spec §3): σ_bar = sample σ of log returns over the trailing 168 h (returns of consecutive bars whose close lies in (hour − 168 h, hour], so known by `hour`), σ_daily = σ_bar × sqrt(bars per day) — the macros trailing_sigma_bar / sigma_daily of fundarb_core.sql_macros, which the leverage-safety backtest applies too. Trailing 24 h USD volume for the volume cap.
-- unique_key: venue, asset, hour
-- not_null: venue, asset, hour
-- accepted_range: sigma_daily 0 5
-- summary: SELECT venue, count(DISTINCT asset) AS assets, round(median(sigma_daily), 4) AS median_sigma_daily FROM volatility GROUP BY 1 ORDER BY 1
SELECT
    venue, asset, hour, timeframe,
    trailing_sigma_bar(log_return, row(venue, asset), hour, INTERVAL 0 MINUTE) AS sigma_bar,
    sigma_daily(trailing_sigma_bar(log_return, row(venue, asset), hour, INTERVAL 0 MINUTE), bar_minutes) AS sigma_daily,
    trailing_return_count(log_return, row(venue, asset), hour, INTERVAL 0 MINUTE) AS n_returns,
    sum(volume_usd) OVER w24 AS volume_usd_24h
FROM {{ ref('stg_candles') }}
WINDOW
    w24 AS (PARTITION BY venue, asset ORDER BY hour RANGE BETWEEN INTERVAL 23 HOURS PRECEDING AND CURRENT ROW)
