-- description: Per (venue, asset, hour) features for forecasting, all as of the instant `hour` (built on observed rates, bars closed by then and open interest stamped by then): lags, rolling means/σ, EWMA (half-life 24 h, truncated at 168 h), z-score, hours to next settlement, open-interest change, volatility, cross-asset BTC/ETH rates on the same venue.
-- unique_key: venue, asset, hour
-- not_null: venue, asset, hour
-- accepted_range: rate_per_hour -0.04 0.04
-- accepted_range: hours_to_next_settlement 0 8
WITH base AS (
    SELECT venue, asset, hour, observed_rate_per_hour AS rate_per_hour, observed_interval_hours AS interval_hours,
           observed_age_hours
    FROM {{ ref('stg_funding_hourly') }}
),
oi AS (
    SELECT venue, asset, ts, oi_usd FROM {{ ref('open_interest') }}
    QUALIFY row_number() OVER (PARTITION BY venue, asset, ts ORDER BY quote_rank(quote)) = 1
),
rolled AS (
    SELECT b.*,
        lag(rate_per_hour, 1) OVER w AS rate_lag_1h,
        lag(rate_per_hour, 8) OVER w AS rate_lag_8h,
        lag(rate_per_hour, 24) OVER w AS rate_lag_24h,
        lag(rate_per_hour, 168) OVER w AS rate_lag_168h,
        avg(rate_per_hour) OVER (w ROWS BETWEEN 23 PRECEDING AND CURRENT ROW) AS rate_mean_24h,
        avg(rate_per_hour) OVER (w ROWS BETWEEN 167 PRECEDING AND CURRENT ROW) AS rate_mean_168h,
        stddev_samp(rate_per_hour) OVER (w ROWS BETWEEN 23 PRECEDING AND CURRENT ROW) AS rate_std_24h,
        stddev_samp(rate_per_hour) OVER (w ROWS BETWEEN 167 PRECEDING AND CURRENT ROW) AS rate_std_168h,
        list(rate_per_hour) OVER (w ROWS BETWEEN 167 PRECEDING AND CURRENT ROW) AS window_168h
    FROM base b
    WINDOW w AS (PARTITION BY venue, asset ORDER BY hour)
),
with_oi AS (
    SELECT r.*, o.oi_usd, o.ts AS oi_ts
    FROM rolled r ASOF LEFT JOIN oi o ON o.venue = r.venue AND o.asset = r.asset AND o.ts <= r.hour
),
with_oi_lag AS (
    SELECT w.*, o24.oi_usd AS oi_usd_24h_ago
    FROM with_oi w
    ASOF LEFT JOIN oi o24 ON o24.venue = w.venue AND o24.asset = w.asset AND o24.ts <= w.hour - INTERVAL 24 HOUR
)
SELECT
    f.venue, f.asset, f.hour, f.interval_hours, f.interval_hours = 1 AS hourly_venue,
    f.rate_per_hour, f.rate_per_hour * 8760 AS rate_apr,
    f.rate_lag_1h, f.rate_lag_8h, f.rate_lag_24h, f.rate_lag_168h,
    f.rate_mean_24h, f.rate_mean_168h, f.rate_std_24h, f.rate_std_168h,
    list_sum(list_transform(f.window_168h, lambda x, i: x * pow(0.5, (len(f.window_168h) - i) / 24.0)))
      / nullif(list_sum(list_transform(f.window_168h,
          lambda x, i: CASE WHEN x IS NOT NULL THEN pow(0.5, (len(f.window_168h) - i) / 24.0) END)), 0)
      AS rate_ewma_24h,
    -- a σ below 1e-12 per hour is a constant series' rounding noise (its value depends on the summation order, hence
    -- on unrelated rows): no z-score then, rather than noise / noise
    CASE WHEN f.rate_std_168h > 1e-12 THEN (f.rate_per_hour - f.rate_mean_168h) / f.rate_std_168h END AS rate_z_168h,
    f.observed_age_hours,
    greatest(f.interval_hours - f.observed_age_hours, 0) AS hours_to_next_settlement,
    CASE WHEN f.hour - f.oi_ts <= INTERVAL 2 HOUR THEN f.oi_usd END AS oi_usd,
    CASE WHEN f.hour - f.oi_ts <= INTERVAL 2 HOUR THEN f.oi_usd / nullif(f.oi_usd_24h_ago, 0) - 1 END
      AS oi_change_24h,
    v.sigma_daily, v.volume_usd_24h,
    btc.rate_per_hour AS btc_rate_per_hour,
    eth.rate_per_hour AS eth_rate_per_hour
FROM with_oi_lag f
LEFT JOIN {{ ref('volatility') }} v ON v.venue = f.venue AND v.asset = f.asset AND v.hour = f.hour
LEFT JOIN base btc ON btc.venue = f.venue AND btc.asset = 'BTC' AND btc.hour = f.hour
LEFT JOIN base eth ON eth.venue = f.venue AND eth.asset = 'ETH' AND eth.hour = f.hour
