-- description: Realised volatility per venue/asset from the finest bars available (spec §3): σ_bar = sample σ of log returns over the trailing 168 h (bars whose close is known by `hour`), σ_daily = σ_bar × sqrt(bars per day). Trailing 24 h USD volume for the volume cap.
-- unique_key: venue, asset, hour
-- not_null: venue, asset, hour
-- accepted_range: sigma_daily 0 5
-- summary: SELECT venue, count(DISTINCT asset) AS assets, round(median(sigma_daily), 4) AS median_sigma_daily FROM volatility GROUP BY 1 ORDER BY 1
SELECT
    venue, asset, hour, timeframe,
    stddev_samp(log_return) OVER w168 AS sigma_bar,
    stddev_samp(log_return) OVER w168 * sqrt(1440.0 / bar_minutes) AS sigma_daily,
    count(log_return) OVER w168 AS n_returns,
    sum(volume_usd) OVER w24 AS volume_usd_24h
FROM {{ ref('stg_candles') }}
WINDOW
    w168 AS (PARTITION BY venue, asset ORDER BY hour RANGE BETWEEN INTERVAL 167 HOURS PRECEDING AND CURRENT ROW),
    w24 AS (PARTITION BY venue, asset ORDER BY hour RANGE BETWEEN INTERVAL 23 HOURS PRECEDING AND CURRENT ROW)
