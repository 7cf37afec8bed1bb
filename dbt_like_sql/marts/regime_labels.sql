-- description: Regime labels per (asset, hour), each using only data known at `hour`. Thresholds are quantiles fitted on the trailing 30 days *before* the hour (the current hour never sets its own threshold) and are stored beside each label. vol_regime: mean σ_daily across venues below its past 20 % quantile = low, above the 80 % quantile = high (unknown with < 7 days of history). funding_compression: cross-venue dispersion of observed per-hour rates below its past 20 % quantile. liquidity_stress: volatility high while open interest (or, where no OI series exists, 24 h volume) fell ≥ 10 % over 24 h. anomaly: an absurd rate (|per hour| > 0.5 %) or a jump of more than 10 σ of its trailing week on any venue. stale_venues: venues whose last settlement is over two intervals old (but under a week: longer silences are delistings, not staleness).
-- unique_key: asset, hour
-- not_null: asset, hour, vol_regime, funding_compression, liquidity_stress, anomaly
-- summary: SELECT asset, max(hour) AS as_of, arg_max(vol_q20, hour) FILTER (WHERE vol_q20 IS NOT NULL) AS vol_q20, arg_max(vol_q80, hour) FILTER (WHERE vol_q80 IS NOT NULL) AS vol_q80, arg_max(dispersion_q20, hour) FILTER (WHERE dispersion_q20 IS NOT NULL) AS dispersion_q20, round(avg((vol_regime = 'high')::INT), 3) AS share_high_vol, round(avg(funding_compression::INT), 3) AS share_compressed, round(avg(liquidity_stress::INT), 3) AS share_stress, round(avg(anomaly::INT), 4) AS share_anomaly FROM regime_labels GROUP BY 1 ORDER BY 1
WITH rates AS (
    SELECT asset, hour,
        count(observed_rate_per_hour) AS venues,
        CASE WHEN count(observed_rate_per_hour) >= 2
             THEN max(observed_rate_per_hour) - min(observed_rate_per_hour) END AS dispersion,
        bool_or(abs(observed_rate_per_hour) > 0.005) AS absurd_rate,
        count(*) FILTER (WHERE NOT rate_is_fresh(observed_age_hours, observed_interval_hours)
                              AND observed_age_hours < 168)
          AS stale_venues
    FROM {{ ref('stg_funding_hourly') }}
    GROUP BY asset, hour
),
jumps AS (
    SELECT asset, hour, bool_or(abs(rate_per_hour - rate_lag_1h) > 10 * rate_std_168h AND rate_std_168h > 0) AS jump
    FROM {{ ref('features') }}
    GROUP BY asset, hour
),
liquidity AS (
    SELECT f.asset, f.hour,
        avg(f.sigma_daily) AS sigma_daily,
        sum(f.oi_usd) AS oi_usd,
        avg(f.oi_change_24h) AS oi_change_24h,
        sum(f.volume_usd_24h) AS volume_usd_24h
    FROM {{ ref('features') }} f
    GROUP BY f.asset, f.hour
),
joined AS (
    SELECT r.asset, r.hour, r.venues, r.dispersion, r.absurd_rate, r.stale_venues, j.jump,
           l.sigma_daily, l.oi_change_24h,
           l.volume_usd_24h / nullif(lag(l.volume_usd_24h, 24) OVER (PARTITION BY r.asset ORDER BY r.hour), 0) - 1
             AS volume_change_24h
    FROM rates r
    LEFT JOIN jumps j USING (asset, hour)
    LEFT JOIN liquidity l USING (asset, hour)
),
thresholds AS (
    SELECT *,
        quantile_cont(sigma_daily, 0.2) OVER past AS vol_q20,
        quantile_cont(sigma_daily, 0.8) OVER past AS vol_q80,
        count(sigma_daily) OVER past AS vol_history,
        quantile_cont(dispersion, 0.2) OVER past AS dispersion_q20,
        count(dispersion) OVER past AS dispersion_history
    FROM joined
    WINDOW past AS (PARTITION BY asset ORDER BY hour
                    RANGE BETWEEN INTERVAL 720 HOURS PRECEDING AND INTERVAL 1 HOUR PRECEDING)
)
SELECT
    asset, hour, venues, sigma_daily, vol_q20, vol_q80,
    CASE WHEN sigma_daily IS NULL OR vol_history < 168 THEN 'unknown'
         WHEN sigma_daily > vol_q80 THEN 'high'
         WHEN sigma_daily < vol_q20 THEN 'low'
         ELSE 'normal' END AS vol_regime,
    dispersion, dispersion_q20,
    coalesce(venues >= 2 AND dispersion_history >= 168 AND dispersion < dispersion_q20, false) AS funding_compression,
    oi_change_24h, volume_change_24h,
    coalesce(sigma_daily > vol_q80 AND vol_history >= 168
             AND coalesce(oi_change_24h, volume_change_24h) <= -0.10, false) AS liquidity_stress,
    coalesce(absurd_rate, false) OR coalesce(jump, false) AS anomaly,
    stale_venues
FROM thresholds
